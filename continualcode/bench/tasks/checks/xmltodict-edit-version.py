import xmltodict

assert xmltodict.__version__ == "0.14.3", xmltodict.__version__
