-- canonical form
-- Piecewise-constant stages: code enters after 1,000 samples, docs leave after 2,000.
MIX 0.5 AS manuals WHERE domain = 'manual',
    0.3 AS code WHERE domain = 'code',
    0.2 AS docs WHERE domain = 'docs'
FROM corpus
ORDER BY CURRICULUM (
    STAGE UNTIL 1000 SAMPLES (code = 0),
    STAGE UNTIL 2000 SAMPLES (),
    STAGE (docs = 0)
)
CHUNK SIZE 100;

-- manuals: dataset corpus, weight 0.5 (share 1/2), 1816 samples, takes 1816 (1.000 epochs, max 1)
SELECT * FROM "corpus" WHERE (domain = 'manual');
-- code: dataset corpus, weight 0.3 (share 3/10), 1108 samples, takes 661 (0.597 epochs, max 1)
SELECT * FROM "corpus" WHERE (domain = 'code') AND (domain = 'manual') IS NOT TRUE;
-- docs: dataset corpus, weight 0.2 (share 1/5), 700 samples, takes 486 (0.694 epochs, max 1)
SELECT * FROM "corpus" WHERE (domain = 'docs') AND (domain = 'manual') IS NOT TRUE AND (domain = 'code') IS NOT TRUE;
-- stream: 2963 samples in 1 partitions of 100-sample chunks, ended by manuals (no LIMIT, ON EXHAUSTION STOP)
-- schedule: STAGE from 0 to 1000: manuals=5/7, code=0, docs=2/7
-- schedule: STAGE from 1000 to 2000: manuals=1/2, code=3/10, docs=1/5
-- schedule: STAGE from 2000 on: manuals=5/8, code=3/8, docs=0
