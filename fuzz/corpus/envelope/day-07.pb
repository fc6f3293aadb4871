
model-desk-us-quality-6-v3
model-desk€ÄÓÆÉ‰Œ Za
US-QUALITY-6"
AAPL0.22"
MSFT0.22"
JNJ0.18"
XOM0.14"
JPM0.12"

PG0.10