"""The one lifecycle of every background thread: start and stop may race."""

from __future__ import annotations

import threading

from sa_river.service import Service


class Idle(Service):
    def run(self) -> None:
        while not self.sleep(0.01):
            pass


def test_a_stop_racing_a_start_never_fails_and_ends_the_thread() -> None:
    errors: list[BaseException] = []
    for _ in range(200):
        service = Idle("idle")

        def start(service: Service = service) -> None:
            try:
                service.start()
            except BaseException as exc:  # pragma: no cover - the failure this test looks for
                errors.append(exc)

        starter = threading.Thread(target=start)
        starter.start()
        assert service.stop(5)
        starter.join(5)
        assert service.stop(5)
        assert not starter.is_alive()
    assert errors == []
