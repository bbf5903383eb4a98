import pytest


@pytest.fixture
def prompt_dir(tmp_path):
    folder = tmp_path / "prompt_sets"
    folder.mkdir()
    return folder
