"""A DVC remote for the tests: a real S3-compatible server (moto) on loopback, as `endpointurl`,
and "machines": each its own `git clone` with its own DVC cache and its own credentials in
`.dvc/config.local` (never committed)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import yaml
from conftest import dvc, md5, run
from moto.server import ThreadedMotoServer

BUCKET = "dvc-remote"
KEY = "testing"  # moto accepts any credentials; DVC still needs some to sign requests


class S3Server:
    """moto's S3 server in a thread of this process, on 127.0.0.1.

    DVC runs as a subprocess, so it talks to this server over real HTTP. `stop()` also closes
    the listening socket (moto's own stop leaves it bound), so clients get "connection refused"
    and `start()` can bind the same port again; the stored buckets live on in moto's backend.
    """

    def __init__(self) -> None:
        self.port = 0  # 0: the OS picks a free port on the first start
        self._moto: ThreadedMotoServer | None = None

    def start(self) -> None:
        self._moto = ThreadedMotoServer("127.0.0.1", self.port, verbose=False)
        self._moto.start()
        self.port = self._moto.get_host_and_port()[1]

    def stop(self) -> None:
        assert self._moto is not None
        self._moto.stop()
        self._moto._server.server_close()  # type: ignore[union-attr]
        self._moto = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> Any:  # boto3 generates the client's type at runtime
        return boto3.client("s3", endpoint_url=self.url, region_name="us-east-1",
                            aws_access_key_id=KEY, aws_secret_access_key=KEY)

    def keys(self, bucket: str, prefix: str) -> set[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix)
        return {o["Key"] for page in pages for o in page.get("Contents", [])}


def add_remote(root: Path, name: str, url: str, endpoint: str, *, local: bool = False,
               default: bool = False) -> None:
    scope = ["--local"] if local else []
    dvc(root, "remote", "add", *scope, *(["-d"] if default else []), name, url)
    dvc(root, "remote", "modify", *scope, name, "endpointurl", endpoint)
    credentials(root, name)


def credentials(root: Path, name: str) -> None:
    """Secrets go to .dvc/config.local, which git ignores: every machine sets its own."""
    dvc(root, "remote", "modify", "--local", name, "access_key_id", KEY)
    dvc(root, "remote", "modify", "--local", name, "secret_access_key", KEY)


def machine(source: Path, dest: Path, raw: bool = True) -> Path:
    """A fresh `git clone` of `source` with its own credentials, and with a copy of the inputs
    (raw images, weights folder) if `raw`, as a teammate who downloaded them has them."""
    run(dest.parent, "git", "clone", "-q", str(source), str(dest))
    if raw:
        for inputs in ("data/raw", "keras_weights"):
            shutil.copytree(source / inputs, dest / inputs, dirs_exist_ok=True)
    credentials(dest, "storage")
    return dest


def snapshot(root: Path) -> dict[str, str]:
    """md5 of every file in the workspace and the DVC cache (not git's store, not DVC's tmp)."""
    skip = (root / ".git", root / ".dvc/tmp")
    return {str(p.relative_to(root)): md5(p) for p in sorted(root.rglob("*"))
            if p.is_file() and not any(p.is_relative_to(s) for s in skip)}


def outputs(root: Path) -> list[str]:
    """The DVC-cached outputs in the workspace (HDF5 files, the model, the submission)."""
    h5 = sorted(str(p.relative_to(root)) for p in root.glob("data/**/*.h5"))
    return [*h5, "models/model_2.h5", "pred.csv"]


def lock_outs(root: Path, stage: str) -> dict[str, str]:
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    return {o["path"]: o["md5"] for o in lock["stages"][stage]["outs"]}


def s3_server() -> Iterator[S3Server]:
    server = S3Server()
    server.start()
    server.client().create_bucket(Bucket=BUCKET)
    yield server
    server.stop()


def with_remote(root: Path, s3: S3Server, prefix: str) -> Path:
    """The team's git repo: the S3 remote committed (not the credentials)."""
    add_remote(root, "storage", f"s3://{BUCKET}/{prefix}", s3.url, default=True)
    run(root, "git", "add", ".dvc/config")
    run(root, "git", "commit", "-qm", "S3 remote")
    return root


