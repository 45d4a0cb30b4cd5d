-- canonical form
-- Children of a sub-mixture may read different datasets; the last component's FROM stays its own,
-- since every earlier component has a dataset.
MIX 0.5 AS code MIX (1 AS parquet_py FROM corpus WHERE language = 'python', 1 AS jsonl_c FROM corpus_jsonl WHERE language = 'c'),
    0.5 AS docs FROM corpus WHERE domain = 'docs'
LIMIT 500 SAMPLES;

-- code.parquet_py: dataset corpus, weight 1 (share 1/4), 769 samples, takes 125 (0.163 epochs, max 1)
SELECT * FROM "corpus" WHERE (language = 'python');
-- code.jsonl_c: dataset corpus_jsonl, weight 1 (share 1/4), 339 samples, takes 125 (0.369 epochs, max 1)
SELECT * FROM "corpus_jsonl" WHERE (language = 'c');
-- docs: dataset corpus, weight 0.5 (share 1/2), 700 samples, takes 250 (0.357 epochs, max 1)
SELECT * FROM "corpus" WHERE (domain = 'docs') AND (language = 'python') IS NOT TRUE;
-- stream: 500 samples in 1 partitions of 1024-sample chunks, ended by LIMIT (LIMIT 500, ON EXHAUSTION STOP)
