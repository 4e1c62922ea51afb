"""The names of the files in a run folder of ``ftx train``, for every module that writes or
reads one (training, fuse, evaluate, the run report), none of which has to import another."""

RUN_MANIFEST = "manifest.json"
RUN_FORMAT = "ftx-run"
METRICS = "metrics.jsonl"
CONFIG = "config.yaml"
# The self-contained HTML report written at the end of a run and by `ftx report`.
REPORT = "report.html"
# Where `ftx evaluate --adapter RUN_DIR` writes by default, and what.
EVAL_DIR = "eval"
EVAL_RESULTS = "results.json"
EVAL_EXAMPLES = "examples.jsonl"
