-- canonical form
-- A component that is itself a mixture: effective shares multiply (0.4 * 0.7 = 0.28 for code.py).
MIX 0.6 AS docs WHERE domain = 'docs',
    0.4 AS code WHERE domain = 'code' MIX (0.7 AS py WHERE language = 'python', 0.3 AS c WHERE language = 'c')
FROM corpus;

-- docs: dataset corpus, weight 0.6 (share 3/5), 700 samples, takes 700 (1.000 epochs, max 1)
SELECT * FROM "corpus" WHERE (domain = 'docs');
-- code.py: dataset corpus, weight 0.7 (share 7/25), 769 samples, takes 327 (0.425 epochs, max 1)
SELECT * FROM "corpus" WHERE ((domain = 'code') AND (language = 'python')) AND (domain = 'docs') IS NOT TRUE;
-- code.c: dataset corpus, weight 0.3 (share 3/25), 339 samples, takes 140 (0.413 epochs, max 1)
SELECT * FROM "corpus" WHERE ((domain = 'code') AND (language = 'c')) AND (domain = 'docs') IS NOT TRUE AND ((domain = 'code') AND (language = 'python')) IS NOT TRUE;
-- stream: 1167 samples in 1 partitions of 1024-sample chunks, ended by docs (no LIMIT, ON EXHAUSTION STOP)
