"""`python -m sandbox.image [--force]`: build the sandbox image; prints its tag and id.

CI runs this right after scripts/start-dockerd.sh, so the tests find the image ready.
"""

from __future__ import annotations

import argparse
import logging
import sys

from sandbox.base import SandboxError
from sandbox.docker import connect
from sandbox.image import IMAGE_TAG, build_image


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.image", description=__doc__)
    parser.add_argument("--force", action="store_true", help="rebuild even when up to date")
    parser.add_argument("--tag", default=IMAGE_TAG)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    try:
        image = build_image(connect(), tag=args.tag, force=args.force)
    except SandboxError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"{args.tag} {image}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
