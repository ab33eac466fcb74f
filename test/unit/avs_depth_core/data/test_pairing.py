import numpy as np
import pytest

from avs_depth_core.data.pairing import DEFAULT_TOLERANCE_NS, EchoBuffer, nearest_stamp, pair_echo_with_frame

MS = 1_000_000


def brute_force(image, echoes, tol):
    """Reference rule: smallest |gap| within tol, earliest stamp on a tie."""
    best = None
    for j, s in enumerate(echoes):
        gap = abs(s - image)
        if gap <= tol and (best is None or gap < abs(echoes[best] - image)):
            best = j
    return best


def test_rule():
    echoes = [0, 100 * MS, 200 * MS]
    assert DEFAULT_TOLERANCE_NS == 50 * MS
    assert pair_echo_with_frame(130 * MS, echoes, 50 * MS) == 1
    assert pair_echo_with_frame(170 * MS, echoes, 50 * MS) == 2
    assert pair_echo_with_frame(150 * MS, echoes, 50 * MS) == 1  # a tie goes to the earlier echo
    assert pair_echo_with_frame(250 * MS, echoes, 50 * MS) == 2  # the tolerance is inclusive
    assert pair_echo_with_frame(251 * MS, echoes, 50 * MS) is None
    assert pair_echo_with_frame(-60 * MS, echoes, 50 * MS) is None
    assert pair_echo_with_frame(5, [], 50 * MS) is None
    assert pair_echo_with_frame(100 * MS, echoes, 0) == 1
    with pytest.raises(ValueError, match="tolerance"):
        nearest_stamp(0, echoes, -1)


def test_rule_matches_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(300):
        echoes = sorted(rng.choice(1000, size=rng.integers(0, 8), replace=False).tolist())
        image, tol = int(rng.integers(-50, 1050)), int(rng.integers(0, 120))
        assert pair_echo_with_frame(image, echoes, tol) == brute_force(image, echoes, tol)


def test_echo_buffer_matches_the_rule():
    buf = EchoBuffer(tolerance_ns=50 * MS, max_items=8)
    for stamp in (200 * MS, 0, 100 * MS):  # out of order arrival
        buf.push(stamp, f"echo@{stamp // MS}")
    assert buf.match(150 * MS) == ("echo@100", 100 * MS)  # tie -> earlier
    assert len(buf) == 2  # the echo at 0 can pair with no later image and is dropped
    assert buf.match(160 * MS) == ("echo@200", 200 * MS)
    assert buf.match(400 * MS) is None and len(buf) == 0
    buf.push(500 * MS, "a")
    buf.push(500 * MS, "b")  # same stamp replaces
    assert buf.match(500 * MS) == ("b", 500 * MS)


def test_echo_buffer_bounds_its_size():
    buf = EchoBuffer(tolerance_ns=10, max_items=3)
    for stamp in range(0, 100, 10):
        buf.push(stamp, stamp)
    assert len(buf) == 3 and buf.evicted == 7
    assert buf.match(0) is None and buf.match(75) == (70, 70)
    with pytest.raises(ValueError):
        EchoBuffer(tolerance_ns=10, max_items=0)


def test_echo_buffer_agrees_with_offline_pairing():
    rng = np.random.default_rng(1)
    echoes = np.cumsum(rng.integers(80, 120, 50)) * MS
    images = np.sort(rng.integers(0, int(echoes[-1]), 120))
    buf = EchoBuffer(DEFAULT_TOLERANCE_NS, max_items=64)
    for s in echoes:
        buf.push(int(s), int(s))
    for image in images:
        j = pair_echo_with_frame(int(image), echoes.tolist(), DEFAULT_TOLERANCE_NS)
        found = buf.match(int(image))
        assert (None if found is None else found[1]) == (None if j is None else int(echoes[j]))
