"""Container health check: exit 0 once /ready answers 200. Exec form, so it needs no shell and no curl."""

import os
import sys
import urllib.request


def main() -> int:
    url = f"http://127.0.0.1:{os.environ.get('PORT', '8000')}/ready"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (fixed loopback URL)
            return 0 if response.status == 200 else 1
    except Exception as error:  # noqa: BLE001 (any failure means unhealthy)
        print(f"unhealthy: {url}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
