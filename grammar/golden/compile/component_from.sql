-- canonical form
-- A component may read its own dataset: FROM right after its name.
MIX 0.6 AS parquet_code FROM corpus WHERE domain = 'code',
    0.4 AS jsonl_docs FROM corpus_jsonl WHERE domain = 'docs'
SEED 1;

-- parquet_code: dataset corpus, weight 0.6 (share 3/5), 1108 samples, takes 1051 (0.949 epochs, max 1)
SELECT * FROM "corpus" WHERE (domain = 'code');
-- jsonl_docs: dataset corpus_jsonl, weight 0.4 (share 2/5), 700 samples, takes 700 (1.000 epochs, max 1)
SELECT * FROM "corpus_jsonl" WHERE (domain = 'docs');
-- stream: 1751 samples in 1 partitions of 1024-sample chunks, ended by jsonl_docs (no LIMIT, ON EXHAUSTION STOP)
