"""The stack as deployed: ``docker-stack.yml`` plus what only the deploying machine knows.

``docker stack deploy --resolve-image never`` (there is no registry) pins no image digest, so a new
image under the same tag would change no service, and nothing would tell which services a deploy
changed. Every deploy (``swarm up``, a rollout) therefore sends the stack file with two labels added
to each service (docs/ARCHITECTURE.md, "Rolling updates"):

- ``minerfleet.image-id`` on its containers: the id of the image its tag names on this machine (the
  copy ``swarm up`` loads into the nodes). A new image is a new task spec, so Swarm replaces the task;
- ``minerfleet.revision`` on the service: a digest of everything that makes the unit what it is (its
  service entry with the variables filled in, its env files' contents, its secrets' and configs'
  names, which carry their contents' digests). A rollout replaces the miners whose revision differs.

The rendered file stays as rendered (golden files, no machine-specific ids in it); the annotated copy
goes to ``docker stack deploy`` on its standard input, a chosen subset of the services at a time.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from orchestrator.render.stack import STACK_FILE

IMAGE_LABEL = "minerfleet.image-id"
REVISION_LABEL = "minerfleet.revision"
# compose's interpolation: ${NAME}, ${NAME:-default}, ${NAME-default}; $$ is a literal $.
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def substitute(text: str, env: Mapping[str, str]) -> str:
    """``text`` with compose's variables filled in from ``env`` (their defaults where unset)."""
    return _VARIABLE.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), text)


def load_stack(project_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((project_dir / STACK_FILE).read_text(encoding="utf-8"))
    return data


def revision(stack: Mapping[str, Any], name: str, project_dir: Path, env: Mapping[str, str]) -> str:
    """What makes service ``name`` what it is, as a short digest (see the module's docstring)."""
    service = stack["services"][name]
    digest = hashlib.sha256(substitute(json.dumps(service, sort_keys=True), env).encode())
    for env_file in service.get("env_file") or []:
        digest.update((project_dir / env_file).read_bytes())
    for kind in ("secrets", "configs"):
        for mount in service.get(kind) or []:
            declared = (stack.get(kind) or {}).get(mount["source"], {})
            digest.update(substitute(json.dumps(declared, sort_keys=True), env).encode())
    return digest.hexdigest()[:16]


def annotate(
    stack: Mapping[str, Any], project_dir: Path, env: Mapping[str, str], image_id: Callable[[str], str | None]
) -> dict[str, Any]:
    """A copy of ``stack`` with each service's image id and revision labels."""
    out = copy.deepcopy(dict(stack))
    for name, service in out["services"].items():
        ident = image_id(substitute(str(service["image"]), env))
        if ident:
            service["labels"] = {**(service.get("labels") or {}), IMAGE_LABEL: ident}
        deploy = service.setdefault("deploy", {})
        digest = revision(out, name, project_dir, env)  # the image id included
        deploy["labels"] = {**(deploy.get("labels") or {}), REVISION_LABEL: digest}
    return out


def revisions(stack: Mapping[str, Any]) -> dict[str, str]:
    """Each service's revision in an annotated stack."""
    return {
        name: str(((service.get("deploy") or {}).get("labels") or {}).get(REVISION_LABEL, ""))
        for name, service in stack["services"].items()
    }


def only(stack: Mapping[str, Any], services: Iterable[str]) -> dict[str, Any]:
    """``stack`` with only these services (the networks, secrets and configs stay: unused ones are
    harmless, and the next deploy's prune removes replaced versions)."""
    keep = set(services)
    out = dict(stack)
    out["services"] = {name: s for name, s in stack["services"].items() if name in keep}
    return out


def dump(stack: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(stack), sort_keys=False, default_flow_style=False)
