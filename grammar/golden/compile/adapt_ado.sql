-- canonical form
-- Weights learnt during the run: ADO from each step's per-component losses (dataset.feedback),
-- starting from the declared weights; a change governs the stream 8 steps after the step it came from.
MIX 0.5 AS code WHERE domain = 'code',
    0.3 AS docs WHERE domain = 'docs',
    0.2 AS rest
FROM corpus
LIMIT 100 STEPS
BATCH SIZE 16
ADAPT USING ado(start_step = 20, update_every = 20, min_weight = 0.05) LAG 8 STEPS;

-- code: dataset corpus, weight 0.5 (share 1/2), 1108 samples, takes 800 (0.722 epochs, max 1)
SELECT * FROM "corpus" WHERE (domain = 'code');
-- docs: dataset corpus, weight 0.3 (share 3/10), 700 samples, takes 480 (0.686 epochs, max 1)
SELECT * FROM "corpus" WHERE (domain = 'docs') AND (domain = 'code') IS NOT TRUE;
-- rest: dataset corpus, weight 0.2 (share 1/5), 2392 samples, takes 320 (0.134 epochs, max 1)
SELECT * FROM "corpus" WHERE (domain = 'code') IS NOT TRUE AND (domain = 'docs') IS NOT TRUE;
-- stream: 1600 samples in 1 partitions of 1024-sample chunks, ended by LIMIT (LIMIT 1600, ON EXHAUSTION STOP)
