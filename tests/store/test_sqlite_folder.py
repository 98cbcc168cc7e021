"""Where a SQLite store may be opened: in an existing folder, or in the project dir, which protege makes itself.

`Protege(db="sqlite:////nonexistent/dir/x.db")` created /nonexistent/dir silently (a mistyped path started an
empty store somewhere new), and a file where the folder should be raised a bare FileExistsError."""

from __future__ import annotations

import pytest

from protege import Protege
from protege.errors import UserError
from protege.store import Store


def test_a_missing_folder_is_refused_and_not_created(tmp_path):
    missing = tmp_path / "no" / "such"
    with pytest.raises(UserError, match=rf"the folder {str(missing)!r} of store .* does not exist; create it"):
        Store(f"sqlite:///{missing / 'x.db'}")
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize("below", ["x.db", "sub/x.db"])
def test_a_file_where_the_folder_should_be_is_named(tmp_path, below):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    with pytest.raises(UserError, match=rf"{str(afile)!r} is a file, not a folder"):
        Store(f"sqlite:///{afile / below}")
    assert afile.read_text() == "mine"


def test_an_app_refuses_a_missing_folder_but_makes_its_own_project_dir(tmp_path, monkeypatch):
    """The default store (<project dir>/protege.db) is protege's own: its folder is made, at any depth; a db= in
    the project dir too. A db= elsewhere must be in a folder that exists."""
    monkeypatch.chdir(tmp_path)
    for var in ("PROTEGE_DB", "PROTEGE_PROJECT_DIR"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(UserError, match="does not exist"):
        Protege(db=f"sqlite:///{tmp_path / 'typo' / 'x.db'}")
    assert not (tmp_path / "typo").exists()
    Protege().close()
    assert (tmp_path / ".protege" / "protege.db").is_file()
    Protege(project_dir=tmp_path / "a" / "b").close()
    Protege(db=f"sqlite:///{tmp_path / 'p' / 'own.db'}", project_dir=tmp_path / "p").close()
    assert (tmp_path / "a" / "b" / "protege.db").is_file() and (tmp_path / "p" / "own.db").is_file()
