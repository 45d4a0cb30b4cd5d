-- canonical form
-- Temperature sampling inside one branch: weight ∝ samples^(1/T), flattening the languages.
MIX 0.7 AS english WHERE language = 'en',
    0.3 AS other MIX TEMPERATURE 3 (de WHERE language = 'de', fr WHERE language = 'fr', ja WHERE language = 'ja')
FROM corpus;

-- english: dataset corpus, weight 0.7 (share 7/10), 1360 samples, takes 764 (0.562 epochs, max 1)
SELECT * FROM "corpus" WHERE (language = 'en');
-- other.de: dataset corpus, weight 4.77686 (share 1/10), 109 samples, takes 109 (1.000 epochs, max 1)
SELECT * FROM "corpus" WHERE (language = 'de') AND (language = 'en') IS NOT TRUE;
-- other.fr: dataset corpus, weight 4.77686 (share 1/10), 109 samples, takes 109 (1.000 epochs, max 1)
SELECT * FROM "corpus" WHERE (language = 'fr') AND (language = 'en') IS NOT TRUE AND (language = 'de') IS NOT TRUE;
-- other.ja: dataset corpus, weight 4.77686 (share 1/10), 109 samples, takes 109 (1.000 epochs, max 1)
SELECT * FROM "corpus" WHERE (language = 'ja') AND (language = 'en') IS NOT TRUE AND (language = 'de') IS NOT TRUE AND (language = 'fr') IS NOT TRUE;
-- stream: 1091 samples in 1 partitions of 1024-sample chunks, ended by other.de (no LIMIT, ON EXHAUSTION STOP)
