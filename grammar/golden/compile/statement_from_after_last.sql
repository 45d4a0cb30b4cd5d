-- canonical form
-- The trailing FROM is the statement's: the other components have none.
MIX 2 AS code WHERE domain = 'code',
    1 AS everything_else
FROM corpus
WHERE quality > 0.4;

-- code: dataset corpus, weight 2 (share 2/3), 1060 samples, takes 1060 (1.000 epochs, max 1)
SELECT * FROM "corpus" WHERE (quality > 0.4) AND (domain = 'code');
-- everything_else: dataset corpus, weight 1 (share 1/3), 2844 samples, takes 530 (0.186 epochs, max 1)
SELECT * FROM "corpus" WHERE (quality > 0.4) AND (domain = 'code') IS NOT TRUE;
-- stream: 1590 samples in 1 partitions of 1024-sample chunks, ended by code (no LIMIT, ON EXHAUSTION STOP)
