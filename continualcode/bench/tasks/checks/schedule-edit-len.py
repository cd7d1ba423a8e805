import schedule

s = schedule.Scheduler()
assert len(s) == 0
s.every(10).seconds.do(print)
s.every().hour.do(print)
assert len(s) == 2, len(s)
