-- canonical form
-- catalog: tokens
-- Shares of tokens, not samples: code is 30% of the stream's n_tokens, up to a budget of 400,000 tokens.
MIX BY TOKENS 0.3 AS code WHERE domain = 'code',
    0.7 AS prose WHERE domain <> 'code'
FROM corpus
LIMIT 400000 TOKENS
PARTITIONS 2;

-- code: dataset corpus, weight 0.3 (share 3/10), 1108 samples, takes 467 (0.421 epochs, max 1)
SELECT * FROM "corpus" WHERE (domain = 'code');
-- prose: dataset corpus, weight 0.7 (share 7/10), 3092 samples, takes 2445 (0.791 epochs, max 1)
SELECT * FROM "corpus" WHERE (domain <> 'code') AND (domain = 'code') IS NOT TRUE;
-- stream: 2912 samples in 2 partitions of 1024-sample chunks, ended by LIMIT (LIMIT 400000 TOKENS, ON EXHAUSTION STOP)
-- tokens: 400033 in the stream (TOKENS): code=120225, prose=279808
