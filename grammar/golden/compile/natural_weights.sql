-- canonical form
-- Weights from the data: each language in proportion to its bytes.
MIX NATURAL BY BYTES
    en WHERE language = 'en',
    de WHERE language = 'de',
    fr WHERE language = 'fr'
FROM corpus
WHERE domain = 'manual';

-- en: dataset corpus, weight 238896 (share 39816/50587), 500 samples, takes 500 (1.000 epochs, max 1)
SELECT * FROM "corpus" WHERE (domain = 'manual') AND (language = 'en');
-- de: dataset corpus, weight 31086 (share 5181/50587), 83 samples, takes 65 (0.783 epochs, max 1)
SELECT * FROM "corpus" WHERE (domain = 'manual') AND (language = 'de') AND (language = 'en') IS NOT TRUE;
-- fr: dataset corpus, weight 33540 (share 5590/50587), 83 samples, takes 70 (0.843 epochs, max 1)
SELECT * FROM "corpus" WHERE (domain = 'manual') AND (language = 'fr') AND (language = 'en') IS NOT TRUE AND (language = 'de') IS NOT TRUE;
-- stream: 635 samples in 1 partitions of 1024-sample chunks, ended by en (no LIMIT, ON EXHAUSTION STOP)
