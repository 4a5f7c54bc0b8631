module shipper/bench/endpoint_go

go 1.21
