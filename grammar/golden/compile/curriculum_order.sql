-- canonical form
-- Easy to hard: code from high to low quality, shuffled within 4 quantile buckets;
-- combined with a weight stage.
MIX 0.5 AS code WHERE domain = 'code',
    0.5 AS docs WHERE domain = 'docs'
FROM corpus
ORDER BY CURRICULUM (
    code BY quality DESC BUCKETS 4,
    docs BY n_bytes ASC BUCKETS 2,
    STAGE UNTIL 500 SAMPLES (docs = 1, code = 3),
    STAGE ()
)
CHUNK SIZE 64;

-- code: dataset corpus, weight 0.5 (share 1/2), 1108 samples, takes 951 (0.858 epochs, max 1), ordered by quality DESC, 4 buckets
SELECT * FROM "corpus" WHERE (domain = 'code');
-- docs: dataset corpus, weight 0.5 (share 1/2), 700 samples, takes 700 (1.000 epochs, max 1), ordered by n_bytes ASC, 2 buckets
SELECT * FROM "corpus" WHERE (domain = 'docs') AND (domain = 'code') IS NOT TRUE;
-- stream: 1651 samples in 1 partitions of 64-sample chunks, ended by docs (no LIMIT, ON EXHAUSTION STOP)
-- schedule: STAGE from 0 to 500: code=3/4, docs=1/4
-- schedule: STAGE from 500 on: code=1/2, docs=1/2
