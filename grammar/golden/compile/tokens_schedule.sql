-- canonical form
-- catalog: tokens
-- A curriculum in tokens: no code for the first 100,000 tokens, then a ramp to equal shares by 300,000.
MIX BY TOKENS NATURAL
    code WHERE domain = 'code',
    prose WHERE domain <> 'code'
FROM corpus
ORDER BY CURRICULUM (
    STAGE UNTIL 100000 TOKENS (code = 0),
    RAMP UNTIL 300000 TOKENS (code = 1, prose = 1)
)
LIMIT 450000 TOKENS;

-- code: dataset corpus, weight 279360 (share 6984/15685), 1108 samples, takes 534 (0.482 epochs, max 1)
SELECT * FROM "corpus" WHERE (domain = 'code');
-- prose: dataset corpus, weight 348040 (share 8701/15685), 3092 samples, takes 2917 (0.943 epochs, max 1)
SELECT * FROM "corpus" WHERE (domain <> 'code') AND (domain = 'code') IS NOT TRUE;
-- stream: 3451 samples in 1 partitions of 1024-sample chunks, ended by LIMIT (LIMIT 450000 TOKENS, ON EXHAUSTION STOP)
-- schedule: STAGE from 0 to 100000: code=0, prose=1
-- schedule: RAMP from 100000 to 300000: code=0, prose=1 -> 1/2, 1/2
-- schedule: HOLD from 300000 on: code=1/2, prose=1/2
-- tokens: 450919 in the stream (TOKENS): code=125899, prose=325020
