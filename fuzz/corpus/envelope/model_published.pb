
model-desk-us-core-v12
model-desk€ÄÓÆÉ‰Œ Zö
US-CORE-EQUITY"
AAPL0.1200"
MSFT0.1150"
NVDA0.1000"
AMZN0.0800"
GOOGL0.0700"
JPM0.0650"
UNH0.0600"
JNJ0.0600"
XOM0.0550"
PG0.0550"
HD0.0500"
KO0.0450"
V0.0450"
CVX0.0400"
PEP0.0400