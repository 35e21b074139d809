"""Shared fixtures: the embedded default configuration and the real-KV test slices."""

from pathlib import Path

import numpy as np
import pytest

from oaken_hw.config import default_config

DATA = Path(__file__).parent.parent / "oaken_hw" / "data"
TOPICS = DATA / "smollm2_pydoc_topics_64tok.npz"
TUTORIAL = DATA / "smollm2_pydocs_tutorial_64tok.npz"


@pytest.fixture(scope="session")
def cfg():
    return default_config()


@pytest.fixture(scope="session")
def kv_topics():
    return dict(np.load(TOPICS))


@pytest.fixture(scope="session")
def kv_tutorial():
    return dict(np.load(TUTORIAL))
