"""Tokens across replicas: a token one replica issues is accepted by the other (one signing key, named
in the shared settings), and settings that would give each replica its own key are refused."""

from __future__ import annotations

from pathlib import Path

import bcrypt
import pytest
import requests
from cluster import MakeCluster
from scaletools import sha256

from lamina.registry.config import ConfigError, load_config


def _auth(tmp_path: Path, signing_key: bool = True) -> str:
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(f"alice:{bcrypt.hashpw(b'secret', bcrypt.gensalt(4)).decode()}\n")
    key = f'\n[auth.token]\nsigning_key = "{tmp_path / "token.pem"}"\n' if signing_key else "\n"
    return (f'[auth]\nhtpasswd = "{htpasswd}"\n[[auth.rules]]\nrepositories = ["**"]\nusers = ["alice"]\n'
            f'actions = ["pull", "push"]{key}')


def test_a_token_from_one_replica_is_accepted_by_the_other(make_cluster: MakeCluster, tmp_path: Path) -> None:
    cluster = make_cluster(replicas=2, extra=_auth(tmp_path))
    a, b = cluster.replicas
    issued = requests.get(f"{a.url}/token", params={"service": "lamina-registry",
                                                    "scope": "repository:team/app:pull,push"},
                          auth=("alice", "secret"), timeout=10)
    assert issued.status_code == 200, issued.text
    bearer = {"Authorization": f"Bearer {issued.json()['token']}"}
    data = b"pushed with A's token through B"
    pushed = requests.post(f"{b.url}/v2/team/app/blobs/uploads/", params={"digest": sha256(data)}, data=data,
                           headers={**bearer, "Content-Type": "application/octet-stream"}, timeout=10)
    assert pushed.status_code == 201, pushed.text
    assert requests.get(f"{a.url}/v2/team/app/blobs/{sha256(data)}", headers=bearer, timeout=10).content == data
    assert requests.get(f"{b.url}/v2/team/app/blobs/{sha256(data)}", timeout=10).status_code == 401


def test_shared_metadata_with_a_per_root_signing_key_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "registry.toml"
    config.write_text('metadata = "postgresql://lamina@127.0.0.1:5432/registry"\n' + _auth(tmp_path, False))
    with pytest.raises(ConfigError, match=r"^auth\.token\.signing_key: required with metadata"):
        load_config(config)
