"""Own job types load as the README and examples/ say, through the real `dispatcher` command
started from the user's own folder (not pytest's, and not `python -m`)."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from tests.support.process import DISPATCHER, REPO_ROOT, Http, free_port

pytestmark = pytest.mark.timeout(60)

MYJOBS = """
from dispatcher import Retry, handler


@handler("thumbnail", timeout=60, retries=3)
async def thumbnail(payload: dict) -> dict:
    return {"url": "https://img.example/" + payload["name"] + ".png"}
"""


async def test_a_handler_module_beside_the_user_loads(serve, http: Http, tmp_path: Path):
    (tmp_path / "myjobs.py").write_text(MYJOBS)
    server = await serve(cwd=tmp_path, DISPATCHER_HANDLERS="myjobs")
    job = await http.submit(server, type="thumbnail", payload={"name": "cat"})
    done = await http.wait(server, job["id"])
    assert done["result"] == {"url": "https://img.example/cat.png"}, done


async def test_the_examples_run_as_their_files_say(serve, http: Http, tmp_path: Path):
    # "DISPATCHER_HANDLERS=examples.handlers dispatcher serve", in a fresh clone's folder.
    shutil.copytree(REPO_ROOT / "examples", tmp_path / "examples")
    server = await serve(cwd=tmp_path, DISPATCHER_HANDLERS="examples.handlers")
    job = await http.submit(server, type="word_count", payload={"text": "a b a"})
    done = await http.wait(server, job["id"])
    assert done["result"] == {"words": 3, "top": [["a", 2], ["b", 1]]}, done


@pytest.mark.parametrize(
    ("module", "says"),
    [
        ("nosuchjobs", "no module 'nosuchjobs' in "),
        ("brokenjobs", "importing 'brokenjobs' failed: No module named 'not_installed_lib'"),
    ],
)
async def test_a_handler_module_that_cannot_load_is_one_clear_line(tmp_path, module, says):
    (tmp_path / "brokenjobs.py").write_text("import not_installed_lib\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISPATCHER_", "PYTHONPATH"))}
    env |= {"DISPATCHER_HANDLERS": module, "DISPATCHER_PORT": str(free_port())}
    process = await asyncio.create_subprocess_exec(
        DISPATCHER, "serve", cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 1
    [line] = stderr.decode().strip().splitlines()
    assert says in line, line
    assert "Traceback" not in line
