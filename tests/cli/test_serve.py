"""`protege students export` tells the one name the served model goes by."""

from __future__ import annotations

import json

from serving_support import make_app, trained_adapter
from typer.testing import CliRunner

from protege.cli import app as cli_app


def test_the_export_hint_uses_the_served_name_of_the_manifest(tmp_path, tiny_base, tmp_path_factory):
    """The hint said `ollama create protege-student`, the README `student`, the manifest `protege-route`."""
    app, student_id = make_app(tmp_path, tiny_base, trained_adapter(tiny_base, tmp_path_factory))
    app.close()
    base = ["--db", f"sqlite:///{tmp_path}/app.db", "--project-dir", str(tmp_path / ".protege")]
    out = tmp_path / "gguf"
    done = CliRunner().invoke(cli_app, [*base, "students", "export", student_id, "--out", str(out)])
    assert done.exit_code == 0, done.output
    name = json.loads((out / "protege_serving.json").read_text())["served_name"]
    assert name == "protege-route"
    assert f"ollama create {name} -f Modelfile" in done.output
    assert f"students serve {student_id[:8]} openai:{name} --base-url http://127.0.0.1:11434/v1" in done.output
