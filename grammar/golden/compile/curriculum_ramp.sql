-- canonical form
-- A linear ramp measured in optimizer steps of a declared global batch size.
MIX 0.8 AS docs WHERE domain = 'docs',
    0.2 AS code WHERE domain = 'code'
FROM corpus
ORDER BY CURRICULUM (
    STAGE UNTIL 10 STEPS (),
    RAMP UNTIL 30 STEPS (docs = 0.3, code = 0.7)
)
CHUNK SIZE 32
BATCH SIZE 32;

-- docs: dataset corpus, weight 0.8 (share 4/5), 700 samples, takes 700 (1.000 epochs, max 1)
SELECT * FROM "corpus" WHERE (domain = 'docs');
-- code: dataset corpus, weight 0.2 (share 1/5), 1108 samples, takes 568 (0.513 epochs, max 1)
SELECT * FROM "corpus" WHERE (domain = 'code') AND (domain = 'docs') IS NOT TRUE;
-- stream: 1268 samples in 1 partitions of 32-sample chunks, ended by docs (no LIMIT, ON EXHAUSTION STOP)
-- schedule: STAGE from 0 to 320: docs=4/5, code=1/5
-- schedule: RAMP from 320 to 960: docs=4/5, code=1/5 -> 3/10, 7/10
-- schedule: HOLD from 960 on: docs=3/10, code=7/10
