"""Validation of a sweep's ``requirements``: pip specifiers, and nothing else pip accepts.

Only a name, extras, version specifiers and an environment marker are allowed. No
URLs, paths, ``name @ url`` direct references or ``-e`` / ``--option`` lines: each
of those would let a sweep choose what the image build fetches or reads, where an
operator chose the index. The orchestrator calls ``parse_requirements`` on user
input, so it raises nothing but ``ValueError`` (a 400) and is cheap: lengths are
checked before anything is parsed.
"""

from collections.abc import Sequence

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

MAX_REQUIREMENTS = 50
MAX_REQUIREMENT_CHARS = 200

# pip treats an argument ending like this as a file to install, not as a name.
_ARCHIVE_SUFFIXES = (
    ".whl",
    ".zip",
    ".tar",
    ".tgz",
    ".tbz",
    ".txz",
    ".tlz",
    ".gz",
    ".bz2",
    ".xz",
    ".lz",
)


def parse_requirements(items: Sequence[str]) -> list[str]:
    """Return the requirements normalised (canonical names, sorted extras and
    specifiers) and sorted; raise ValueError naming the first bad item and the rule."""
    if isinstance(items, str | bytes) or not isinstance(items, Sequence):
        raise ValueError("requirements: must be a list of strings")
    if len(items) > MAX_REQUIREMENTS:
        raise ValueError(f"requirements: at most {MAX_REQUIREMENTS} items, got {len(items)}")
    normalised: list[str] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        name, requirement = _parse_one(index, item)
        if name in seen:
            raise ValueError(
                f"requirements[{index}]: {name!r} is listed twice (also requirements[{seen[name]}])"
            )
        seen[name] = index
        normalised.append(requirement)
    return sorted(normalised)


def _parse_one(index: int, item: object) -> tuple[str, str]:
    where = f"requirements[{index}]"
    if not isinstance(item, str):
        raise ValueError(f"{where}: must be a string")
    if len(item) > MAX_REQUIREMENT_CHARS:
        raise ValueError(f"{where}: longer than {MAX_REQUIREMENT_CHARS} characters")
    # Printable ASCII only: a newline or a NUL must never reach a command line or a
    # file, and names, versions and markers need nothing else.
    if not all(" " <= char <= "~" for char in item):
        raise ValueError(f"{where}: only printable ASCII characters are allowed")
    text = item.strip()
    if not text:
        raise ValueError(f"{where}: is empty")
    if text.startswith("-"):
        raise ValueError(
            f"{where}: {item!r} is a pip option; only requirement specifiers are allowed"
        )
    try:
        requirement = Requirement(text)
    except InvalidRequirement as error:
        detail = str(error).splitlines()[0] if str(error) else "unparsable"
        raise ValueError(
            f"{where}: {item!r} is not a requirement specifier (name, extras, version "
            f"specifiers, marker): {detail}"
        ) from None
    if requirement.url is not None:
        raise ValueError(
            f"{where}: {item!r} is a direct reference; only name and version specifiers are allowed"
        )
    if requirement.name.lower().endswith(_ARCHIVE_SUFFIXES):
        raise ValueError(f"{where}: {item!r} looks like a file name; give a package name")
    name = str(canonicalize_name(requirement.name))
    extras = sorted(canonicalize_name(extra) for extra in requirement.extras)
    normalised = name
    if extras:
        normalised += f"[{','.join(extras)}]"
    normalised += str(requirement.specifier)  # packaging sorts the specifiers
    if requirement.marker is not None:
        normalised += f"; {requirement.marker}"
    return name, normalised
