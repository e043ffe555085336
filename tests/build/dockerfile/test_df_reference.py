"""The history BuildKit wrote for a real build (tests/data/buildkit-cache) is what convert() writes."""

import json

from dfsupport import run, target

from helpers.reference import REFERENCE_DIR

REFERENCE = REFERENCE_DIR / "image-config.json"

DOCKERFILE = """\
FROM localhost:5000/base/busybox:latest
ENV APP_HOME=/app GREETING=hello
WORKDIR /app
RUN mkdir -p /app/data && echo "step1 $GREETING" > /app/data/step1.txt && sleep 2
COPY files/ /app/files/
RUN cat /app/files/a.txt /app/files/b.txt > /app/data/combined.txt && sleep 2
RUN i=0; while [ $i -lt 200 ]; do echo "line $i" >> /app/data/big.txt; i=$((i+1)); done && sleep 2
COPY config.ini /app/config.ini
RUN ls -la /app /app/data > /app/listing.txt && wc -l /app/data/big.txt > /app/data/count.txt && sleep 1
CMD ["sh", "-c", "cat /app/data/combined.txt"]
"""


def test_history_and_config_match_buildkit() -> None:
    from dfsupport import Resolver

    reference = json.loads(REFERENCE.read_text())
    base_env = {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]}
    stage = target(run(DOCKERFILE, Resolver({"localhost:5000/base/busybox:latest": base_env})))
    expected = [h["created_by"] for h in reference["history"][1:]]  # [0] is the base image's own layer
    assert [s.created_by for s in stage.steps] == expected
    assert stage.config.dump() == reference["config"]
