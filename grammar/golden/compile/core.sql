-- canonical form
-- The core form, exactly as in the design card.
MIX 0.5 AS manuals WHERE domain = 'manual' AND language = 'en',
    0.3 AS code WHERE domain = 'code' AND quality > 0.2,
    0.2 AS docs WHERE domain = 'docs' AND ARRAY_CONTAINS(tags, 'example')
FROM corpus
WHERE n_bytes BETWEEN 200 AND 200000
SEED 7;

-- manuals: dataset corpus, weight 0.5 (share 1/2), 500 samples, takes 219 (0.438 epochs, max 1)
SELECT * FROM "corpus" WHERE (n_bytes BETWEEN 200 AND 200000) AND (domain = 'manual' AND language = 'en');
-- code: dataset corpus, weight 0.3 (share 3/10), 800 samples, takes 131 (0.164 epochs, max 1)
SELECT * FROM "corpus" WHERE (n_bytes BETWEEN 200 AND 200000) AND (domain = 'code' AND quality > 0.2) AND (domain = 'manual' AND language = 'en') IS NOT TRUE;
-- docs: dataset corpus, weight 0.2 (share 1/5), 87 samples, takes 87 (1.000 epochs, max 1)
SELECT * FROM "corpus" WHERE (n_bytes BETWEEN 200 AND 200000) AND (domain = 'docs' AND ARRAY_CONTAINS(tags, 'example')) AND (domain = 'manual' AND language = 'en') IS NOT TRUE AND (domain = 'code' AND quality > 0.2) IS NOT TRUE;
-- stream: 437 samples in 1 partitions of 1024-sample chunks, ended by docs (no LIMIT, ON EXHAUSTION STOP)
