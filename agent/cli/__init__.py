"""The `autoannotator` command line: UI only, the work is done in agent.pipeline and below."""

import os

# Our progress bars show each stage; the libraries' own bars (one per model load) are noise.
# Set here, before any command module imports the libraries that read it.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")  # export --format hf
# transformers' per-load reports ("classifier.weight MISSING" when the demo catalog gives the
# bundled encoder a new head, as intended) read as errors to a user; real failures still raise.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
