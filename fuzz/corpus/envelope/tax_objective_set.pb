
crm-HH-20417-objective-2025-06advisor-workstation€øÏ¤€Ó ¢
HH-20417	
40000