"""What a newcomer trips on (issue 25): errors that say what to do, tables that stay readable."""

from __future__ import annotations

import pytest

from spotlight.client import SpotlightClient, SpotlightError
from spotlight.contract import columns as colmap
from spotlight.ops.redis_server import free_port


def test_a_column_error_is_a_spotlight_error() -> None:
    with pytest.raises(SpotlightError) as caught:
        colmap.check_mapping({"nonsense_field": "x"})
    assert isinstance(caught.value, ValueError) and caught.value.code == "column_error"
    assert caught.value.message and "nonsense_field" in caught.value.message


def test_a_refused_connection_says_where_the_client_looked_and_how_to_point_it() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens here
    with SpotlightClient(url) as client, pytest.raises(SpotlightError) as caught:
        client.datasets()
    assert caught.value.code == "connection_error"
    for words in (url, "--server", "SPOTLIGHT_SERVER", "make run"):
        assert words in caught.value.message


def test_submit_says_exactly_how_to_save_string_labels_it_will_not_unpickle(tmp_path) -> None:
    import numpy as np

    from spotlight.client.cli import main

    np.save(tmp_path / "e.npy", np.zeros((3, 2)))
    np.save(tmp_path / "l.npy", np.zeros(3))
    np.save(tmp_path / "labels.npy", np.array(["cat", "dog", "cat"], dtype=object), allow_pickle=True)  # pandas' way
    unreachable = ["--server", "http://127.0.0.1:9"]
    with pytest.raises(SystemExit, match=r"astype\(str\)") as caught:
        main(
            [
                "submit",
                str(tmp_path / "e.npy"),
                str(tmp_path / "l.npy"),
                "--labels",
                str(tmp_path / "labels.npy"),
                *unreachable,
            ]
        )
    assert "pickle" in str(caught.value) and "Array can't be memory-mapped" not in str(caught.value)


def test_float32_values_read_as_they_were_written_in_descriptions_and_the_report() -> None:
    import numpy as np

    from worker.describe import _jsonable
    from worker.report import _short

    assert _jsonable(np.float32(7.7)) == 7.7 and _jsonable(np.float64(0.1)) == 0.1 and _jsonable(np.int64(3)) == 3
    assert _short(float(np.float32(7.7))) == "7.7"  # a description stored before: 7.699999809265137
    assert _short(0.1) == "0.1" and _short("cat") == "cat"
