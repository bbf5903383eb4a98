import pytest

from tests.support.pipeline import make_resources


@pytest.fixture
def prompt_dir(tmp_path):
    folder = tmp_path / "prompt_sets"
    folder.mkdir()
    return folder


@pytest.fixture
def resources(db_url, prompt_dir, llm_server):
    return make_resources(db_url, prompt_dir, llm_server.url)
