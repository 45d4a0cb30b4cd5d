-- canonical form
-- Overlapping components: a sample belongs to the first component it matches.
MIX 1 AS examples WHERE has_example,
    1 AS python WHERE language = 'python',
    1 AS rest /* no WHERE: every sample not taken above */
FROM corpus;

-- examples: dataset corpus, weight 1 (share 1/3), 255 samples, takes 255 (1.000 epochs, max 1)
SELECT * FROM "corpus" WHERE (has_example);
-- python: dataset corpus, weight 1 (share 1/3), 678 samples, takes 255 (0.376 epochs, max 1)
SELECT * FROM "corpus" WHERE (language = 'python') AND (has_example) IS NOT TRUE;
-- rest: dataset corpus, weight 1 (share 1/3), 3267 samples, takes 255 (0.078 epochs, max 1)
SELECT * FROM "corpus" WHERE (has_example) IS NOT TRUE AND (language = 'python') IS NOT TRUE;
-- stream: 765 samples in 1 partitions of 1024-sample chunks, ended by examples (no LIMIT, ON EXHAUSTION STOP)
-- overlap: 91 samples of python belong to examples
