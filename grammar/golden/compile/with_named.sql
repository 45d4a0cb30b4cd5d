-- canonical form
-- Predicates defined once and reused; a sample matching two components is an error here.
WITH good AS (quality > 0.3),
     short AS (n_bytes < 2000)
MIX 0.5 AS good_code WHERE domain = 'code' AND (quality > 0.3),
    0.5 AS short_docs WHERE domain = 'docs' AND (n_bytes < 2000)
FROM corpus
OVERLAP ERROR;

-- good_code: dataset corpus, weight 0.5 (share 1/2), 1107 samples, takes 690 (0.623 epochs, max 1)
SELECT * FROM "corpus" WHERE (domain = 'code' AND (quality > 0.3));
-- short_docs: dataset corpus, weight 0.5 (share 1/2), 689 samples, takes 689 (1.000 epochs, max 1)
SELECT * FROM "corpus" WHERE (domain = 'docs' AND (n_bytes < 2000)) AND (domain = 'code' AND (quality > 0.3)) IS NOT TRUE;
-- stream: 1379 samples in 1 partitions of 1024-sample chunks, ended by short_docs (no LIMIT, ON EXHAUSTION STOP)
