"""Where the paper's published data files are (../shared/ost-data beside the repository in the
project workspace; a user's clone has none), and the mark that skips a test without them."""
from pathlib import Path

import pytest

PAPER_DATA = Path(__file__).resolve().parents[3] / "shared" / "ost-data"
needs_paper_data = pytest.mark.skipif(not PAPER_DATA.is_dir(), reason="../shared/ost-data (the paper's files) is not here")
