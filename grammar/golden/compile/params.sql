-- canonical form
-- params: {"min_quality": 0.3, "languages": ["python", "c"], "code_weight": 0.6, "seed": 11}
-- One file, several training configs: parameters bound from the API or `--param`.
MIX 0.6 AS code WHERE domain = 'code' AND quality >= 0.3 AND ARRAY_CONTAINS(['python', 'c'], language),
    0.4 AS docs WHERE domain = 'docs'
FROM corpus
SEED 11;

-- code: dataset corpus, weight 0.6 (share 3/5), 1107 samples, takes 1051 (0.949 epochs, max 1)
SELECT * FROM "corpus" WHERE (domain = 'code' AND quality >= 0.3 AND ARRAY_CONTAINS(['python', 'c'], language));
-- docs: dataset corpus, weight 0.4 (share 2/5), 700 samples, takes 700 (1.000 epochs, max 1)
SELECT * FROM "corpus" WHERE (domain = 'docs') AND (domain = 'code' AND quality >= 0.3 AND ARRAY_CONTAINS(['python', 'c'], language)) IS NOT TRUE;
-- stream: 1751 samples in 1 partitions of 1024-sample chunks, ended by docs (no LIMIT, ON EXHAUSTION STOP)
