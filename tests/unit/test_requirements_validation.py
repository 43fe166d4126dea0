"""A sweep's requirements as the spec gives them: normalised, or refused naming the item
and the rule. In-process; the derived images they are installed into are built in
``tests/test_requirements.py``."""

from __future__ import annotations

import random

import pytest

from prism.requirements import MAX_REQUIREMENT_CHARS, MAX_REQUIREMENTS, parse_requirements


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        (["numpy"], ["numpy"]),
        (["NumPy>=1.26,<2"], ["numpy<2,>=1.26"]),
        (["  pandas  "], ["pandas"]),
        (["requests==2.*"], ["requests==2.*"]),
        (["zope.interface~=6.0"], ["zope-interface~=6.0"]),
        (["foo (>=1.0)"], ["foo>=1.0"]),
        (["Foo_Bar[Extra_One,b]>=1.0"], ["foo-bar[b,extra-one]>=1.0"]),
        (
            ["scipy; python_version >= '3.8' and os_name == 'posix'"],
            ['scipy; python_version >= "3.8" and os_name == "posix"'],
        ),
        (["b", "c", "a"], ["a", "b", "c"]),
        ([], []),
        (("tuple", "too"), ["too", "tuple"]),
    ],
    ids=lambda value: repr(value)[:40],
)
def test_valid_requirements_are_normalised_and_sorted(
    items: list[str], expected: list[str]
) -> None:
    assert parse_requirements(items) == expected
    assert parse_requirements(expected) == expected  # normalising twice changes nothing


def test_the_limits_themselves_are_accepted() -> None:
    longest = "a" * MAX_REQUIREMENT_CHARS
    assert parse_requirements([longest]) == [longest]
    many = [f"package{i}" for i in range(MAX_REQUIREMENTS)]
    assert parse_requirements(many) == sorted(many)


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (["x @ file:///etc"], "requirements[0]: 'x @ file:///etc' is a direct reference"),
        (["ok", "pkg @ https://example.invalid/pkg.whl"], "requirements[1]: 'pkg @ "),
        (["-e ."], "requirements[0]: '-e .' is a pip option"),
        (["--index-url=http://127.0.0.1/"], "is a pip option"),
        (["-r/etc/passwd"], "is a pip option"),
        (["./pkg"], "requirements[0]: './pkg' is not a requirement specifier"),
        (["/etc/passwd"], "is not a requirement specifier"),
        (["../pkg"], "is not a requirement specifier"),
        (["file:///etc/passwd"], "is not a requirement specifier"),
        (["git+https://example.invalid/repo"], "is not a requirement specifier"),
        (["pkg.whl"], "requirements[0]: 'pkg.whl' looks like a file name"),
        (["pkg-1.0.tar.gz"], "looks like a file name"),
        (["pkg # comment"], "is not a requirement specifier"),
        (["pkg>=1 --hash=sha256:00"], "is not a requirement specifier"),
        (["pkg;"], "is not a requirement specifier"),
        (["${HOME}"], "is not a requirement specifier"),
        (["pkg[extra"], "is not a requirement specifier"),
        (["numpy", "NumPy>=1"], "requirements[1]: 'numpy' is listed twice (also requirements[0])"),
        (["a_b", "A.B"], "requirements[1]: 'a-b' is listed twice"),
        (["a" * (MAX_REQUIREMENT_CHARS + 1)], "requirements[0]: longer than 200 characters"),
        (["x" * 10**7], "requirements[0]: longer than 200 characters"),
        ([""], "requirements[0]: is empty"),
        (["ok", "   "], "requirements[1]: is empty"),
        (["pkg\n--index-url http://127.0.0.1/"], "only printable ASCII"),
        (["pkg\x00"], "only printable ASCII"),
        (["pkg; os_name == 'ü'"], "only printable ASCII"),
        ([f"p{i}" for i in range(MAX_REQUIREMENTS + 1)], "requirements: at most 50 items, got 51"),
        ("numpy", "requirements: must be a list of strings"),
        (b"numpy", "requirements: must be a list of strings"),
        ([1], "requirements[0]: must be a string"),
        ([None], "requirements[0]: must be a string"),
    ],
    ids=lambda value: repr(value)[:40],
)
def test_invalid_requirements_name_the_item_and_the_rule(items: object, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_requirements(items)  # type: ignore[arg-type]
    assert type(caught.value) is ValueError
    assert message in str(caught.value)


def test_validation_raises_nothing_but_value_error() -> None:
    # Seeded, so a failure reproduces: strings made of the characters requirements use.
    alphabet = "abcXYZ019_.-[],;:<>=!~*@ '\"()/\\#$%&+?{}^|`\t"
    chooser = random.Random(1)
    for _ in range(3000):
        text = "".join(chooser.choices(alphabet, k=chooser.randint(0, 40)))
        try:
            result = parse_requirements([text])
        except ValueError:
            continue
        assert parse_requirements(result) == result
