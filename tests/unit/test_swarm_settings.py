"""prism.swarm's side of what other rooms define (it may not import them)."""

from __future__ import annotations

from prism import swarm
from sandbox import services_image


def test_the_image_label_is_the_one_the_build_writes() -> None:
    assert swarm.HASH_LABEL == services_image.HASH_LABEL
    assert swarm.SERVICES_IMAGE == services_image.SERVICES_TAG
