import pytest

from lowvram.errors import UserError
from lowvram.units import check_resolution, parse_size


@pytest.mark.parametrize("text,expected", [("8 GB", 8 * 2**30), ("8GiB", 8 * 2**30), ("8192MB", 8 * 2**30),
                                           ("12", 12 * 2**30), ("1.5 TB", int(1.5 * 2**40)), ("512 mib", 2**29)])
def test_sizes_parse(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["eight GB", "8 XB", "", "-4GB", "0", "1e99GB", "8 G B"])
def test_bad_sizes_are_user_errors(text):
    with pytest.raises(UserError):
        parse_size(text, "VRAM size")


def test_resolution_checks():
    check_resolution(1024, 768, 16, "flux-dev")
    with pytest.raises(UserError, match="multiple of 16"):
        check_resolution(1000, 1024, 16, "flux-dev")
    with pytest.raises(UserError, match="16384"):
        check_resolution(32768, 1024, 8, "sdxl")
