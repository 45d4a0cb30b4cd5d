-- canonical form
-- When messages run out, their share goes to the others in proportion.
MIX 0.3 AS messages WHERE domain = 'messages',
    0.4 AS code WHERE domain = 'code',
    0.3 AS manuals WHERE domain = 'manual'
FROM corpus
CHUNK SIZE 100
ON EXHAUSTION REDISTRIBUTE;

-- messages: dataset corpus, weight 0.3 (share 3/10), 576 samples, takes 570 (0.990 epochs, max 1)
SELECT * FROM "corpus" WHERE (domain = 'messages');
-- code: dataset corpus, weight 0.4 (share 2/5), 1108 samples, takes 1103 (0.995 epochs, max 1)
SELECT * FROM "corpus" WHERE (domain = 'code') AND (domain = 'messages') IS NOT TRUE;
-- manuals: dataset corpus, weight 0.3 (share 3/10), 1816 samples, takes 1816 (1.000 epochs, max 1)
SELECT * FROM "corpus" WHERE (domain = 'manual') AND (domain = 'messages') IS NOT TRUE AND (domain = 'code') IS NOT TRUE;
-- stream: 3489 samples in 1 partitions of 100-sample chunks, ended by manuals (no LIMIT, ON EXHAUSTION REDISTRIBUTE)
