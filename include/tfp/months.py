"""Calendar-month arithmetic, the one rule the package uses (criteria windows, retention cut-offs).

The same day number in the target month, clamped to that month's last day: 2024-02-29 - 12 months =
2023-02-28 and 2023-03-31 + 11 months = 2024-02-29 (contract sections 5 and 10).
"""

from __future__ import annotations

import calendar
from datetime import date


def add_months(day: date, months: int) -> date:
    """``day`` moved by whole calendar months (negative for earlier), clamped to the month's end."""
    year, month_index = divmod(day.year * 12 + day.month - 1 + months, 12)
    month = month_index + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))
