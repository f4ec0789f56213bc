"""The feedback corpus accuracy table (``fb_scoring.SUMMARY``, filled by test_fb_corpus.py) is
shown in pytest's terminal summary, also without -s: by tests/conftest.py, which the main
process loads also when the tests run in xdist workers."""
