module shipper.test/nodeimages

go 1.26.0
