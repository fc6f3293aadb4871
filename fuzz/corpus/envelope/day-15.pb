
clock-market-close-2025-03-14	scheduler€²´¾±ŠŒ ’
2025-03-14