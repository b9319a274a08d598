"""Operations: replay, dead-letter redrive, lag monitoring, status, tracking and stats."""
