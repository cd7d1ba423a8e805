import schedule

s = schedule.Scheduler()
a = s.every().second.do(print).tag("backup")
s.every().second.do(print)
assert s.get_jobs("backup") == [a], s.get_jobs("backup")
assert len(s.get_jobs()) == 2
