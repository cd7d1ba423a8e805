import datetime

import schedule

job = schedule.Scheduler().every(2).hours.do(print)
assert job.unit == "hours", job.unit
left = job.next_run - datetime.datetime.now()
assert datetime.timedelta(hours=1, minutes=59) < left <= datetime.timedelta(hours=2), left
