"""The documentation stays true: the config reference is the code's, every command in README.md and
docs/ parses (its verb, its flags, its config file with its overrides; scripts and files it names
exist), and the project's files speak of the project, not of how its work was organised."""

from __future__ import annotations

import re
import runpy
import shlex
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_the_config_reference_is_generated_from_the_code():
    reference = runpy.run_path(str(ROOT / "scripts" / "config_reference.py"))["reference"]()
    assert (ROOT / "docs" / "config.md").read_text() == reference, "docs/config.md is stale: python scripts/config_reference.py > docs/config.md"
    from textlora.config import TrainConfig

    assert "`train.prefix_cache`" in reference and all(f"`train.{name}`" in reference for name in TrainConfig.__dataclass_fields__)


def test_no_file_speaks_of_work_sessions_or_issue_numbers():
    pattern = re.compile("(sess" + r"ions?|iss" + r"ues?)[ -]#?[0-9]", re.IGNORECASE)
    files = subprocess.run(["git", "ls-files", "README.md", "docs", "configs", "src", "tests", "bench", "scripts"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    hits = []
    for name in files:
        path = ROOT / name
        if path.suffix in (".py", ".md", ".yaml", ".yml", ".sh", ".txt", ".toml", ".json", ".html") and path.is_file():
            for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                if pattern.search(line):
                    hits.append(f"{name}:{n}: {line.strip()[:100]}")
    assert not hits, "\n".join(hits)


def _commands():
    """(file, line) for every command in a ```bash block of README.md and docs/*.md."""
    for doc in DOCS:
        text = doc.read_text()
        for block in re.findall(r"```bash\n(.*?)```", text, re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = re.split(r"\s+#\s", line, maxsplit=1)[0].strip()
                if line and not line.startswith("#"):
                    yield doc.name, line


COMMANDS = list(_commands())


def test_the_docs_have_commands():
    verbs = {line.split("textlora", 1)[1].split()[0] for _, line in COMMANDS if re.search(r"(^|[/ ])textlora \w", line)}
    assert {"pipeline", "train", "predict", "evaluate", "serve", "export", "budget", "adapt", "generate", "filter"} <= verbs


@pytest.mark.parametrize("doc,line", COMMANDS, ids=[f"{d}:{c[:60]}" for d, c in COMMANDS])
def test_each_command_parses(doc, line):
    from textlora.cli import VERBS, _loader, build_parser

    line = re.sub(r"\[-[^\[\]]*\]", "", line)  # [--seed 43]: optional parts
    words = shlex.split(line)
    if words[:1] == ["bash"]:
        assert (ROOT / words[1]).is_file(), f"{doc}: {words[1]} does not exist"
        return
    if words[:1] in (["python"], ["python3"]) and words[1].endswith(".py"):
        assert (ROOT / words[1]).is_file(), f"{doc}: {words[1]} does not exist"
        return
    # `textlora VERB`, `.venv/bin/textlora VERB`, `torchrun ... -m textlora VERB`; pip, curl and the like are not checked
    at = next((i for i, w in enumerate(words) if w.endswith("/textlora") or (w == "textlora" and (i == 0 or words[i - 1] == "-m"))), None)
    if at is None:
        return
    verb, args = words[at + 1], words[at + 2 :]
    assert verb in VERBS, f"{doc}: unknown verb {verb!r} in {line}"
    parser = build_parser(verb)
    try:
        parsed, extra = parser.parse_known_args([verb, *args])
    except SystemExit:
        pytest.fail(f"{doc}: {line}: the flags do not parse")
    spec = VERBS[verb]
    config = getattr(parsed, "config", None) or getattr(parsed, "config_path", None)
    if spec.config and config and (ROOT / config).suffix in (".yaml", ".yml") and not config.startswith("my-"):
        assert (ROOT / config).is_file(), f"{doc}: {config} does not exist"
        loader = _loader(spec.config)
        loaded = loader(str(ROOT / config), extra, cls=_loader(spec.config_class)) if spec.config_class else loader(str(ROOT / config), extra)
        assert loaded is not None
    else:
        assert not extra or spec.config, f"{doc}: {line}: unrecognized {extra}"
