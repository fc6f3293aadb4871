
mktdata-JNJ-20250314T200000Zmarket-data°‘®ŠŒ b
JNJ162.71€à ‘®ŠŒ