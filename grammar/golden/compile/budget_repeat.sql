-- canonical form
-- A budget of 3,000 samples: the small messages component is repeated (reshuffled each epoch)
-- up to its MAX EPOCHS.
MIX 0.3 AS messages WHERE domain = 'messages' MAX EPOCHS 3,
    0.7 AS code WHERE domain = 'code'
FROM corpus
LIMIT 3000 SAMPLES
CHUNK SIZE 100
ON EXHAUSTION REPEAT;

-- messages: dataset corpus, weight 0.3 (share 3/10), 576 samples, takes 900 (1.562 epochs, max 3)
SELECT * FROM "corpus" WHERE (domain = 'messages');
-- code: dataset corpus, weight 0.7 (share 7/10), 1108 samples, takes 2100 (1.895 epochs, max unlimited)
SELECT * FROM "corpus" WHERE (domain = 'code') AND (domain = 'messages') IS NOT TRUE;
-- stream: 3000 samples in 1 partitions of 100-sample chunks, ended by LIMIT (LIMIT 3000, ON EXHAUSTION REPEAT)
