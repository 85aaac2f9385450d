"""Event ids in the events view: uuid5 of the email's id and the version."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from projections.events import event_id


@given(email_id=st.uuids(), version=st.integers(min_value=1, max_value=10**9))
def test_event_id_is_uuid5_of_the_email_and_version(email_id: uuid.UUID, version: int) -> None:
    assert event_id(email_id, version) == str(uuid.uuid5(email_id, str(version)))
