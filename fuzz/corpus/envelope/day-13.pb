
mktdata-PG-20250314T200000Zmarket-data°‘®ŠŒ b
PG166.12€à ‘®ŠŒ