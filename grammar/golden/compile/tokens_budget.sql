-- canonical form
-- catalog: tokens
-- Mixed by samples, budgeted in tokens: the stream ends at the sample that reaches 1,000,000 tokens.
MIX 0.5 AS code WHERE domain = 'code',
    0.5 AS docs WHERE domain = 'docs'
FROM corpus
LIMIT 1000000 TOKENS
ON EXHAUSTION REPEAT;

-- code: dataset corpus, weight 0.5 (share 1/2), 1108 samples, takes 2889 (2.607 epochs, max unlimited)
SELECT * FROM "corpus" WHERE (domain = 'code');
-- docs: dataset corpus, weight 0.5 (share 1/2), 700 samples, takes 2888 (4.126 epochs, max unlimited)
SELECT * FROM "corpus" WHERE (domain = 'docs') AND (domain = 'code') IS NOT TRUE;
-- stream: 5777 samples in 1 partitions of 1024-sample chunks, ended by LIMIT (LIMIT 1000000 TOKENS, ON EXHAUSTION REPEAT)
-- tokens: 1000066 in the stream (SAMPLES): code=722291, docs=277775
